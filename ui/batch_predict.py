"""Predict an uploaded raw-format CSV: validate rows here, send only the good ones, keep the bad with reasons.

Rows are checked with the same parser the pipeline uses (``parse_features``),
so a bad row is listed with its reason instead of sinking the whole request.
Should the service still refuse records (422), the records it names are moved
to the rejects with the service's own reason and the rest are sent again, until
it accepts them or none is left (a 422 lists at most 100 problems).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from covertype.parsing import RowError, parse_features
from covertype.schema import COVER_TYPE_NAMES, FEATURE_COLUMNS, LABEL_COLUMN, RAW_COLUMNS
from ui.clients.errors import InvalidInput, ServiceError, UnexpectedResponse
from ui.clients.inference import SAME_RELEASE_HINT, SERVICE, InferenceClient, PredictionResult
from ui.presentation import cover_type_name

CHUNK_SIZE = 1000
# Requests per chunk while the service refuses records (422). One 422 lists at most 100 problems, so 20
# rounds take away every record of a chunk refused for one or two fields each; a service of another
# release refusing every record for many fields would otherwise cost hundreds of requests per chunk.
MAX_REFUSAL_ROUNDS = 20
MAX_ROWS = 50_000
# A raw-format row of the shared data takes 46..61 bytes, so MAX_ROWS rows are about 3 MB; 10 MB leaves
# room for CRLF line ends, spaces after commas and blank lines, and refuses a large file before it is
# parsed (pandas needs several times a file's size to parse it).
MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
# Lines of a file, blank ones included, checked before parsing: with room for blank lines, but a
# file of millions of empty lines (well under MAX_UPLOAD_MB) is refused rather than read.
MAX_LINES = 2 * MAX_ROWS
# Lines parsed per piece: a fixed size, so that the number of parser calls does not grow with blank
# lines; at most this many lines past the row limit are ever parsed.
PIECE_LINES = 5_000


class CsvFormatError(ValueError):
    """The file is not a raw-format CSV; the message says what was expected."""


@dataclass(frozen=True)
class RejectedLine:
    """A row of the file that was not predicted: its line, the fields and why."""

    line: int
    fields: list[str]
    reason: str
    detail: str


@dataclass(frozen=True)
class StoppedPart:
    """Where a file's prediction stopped: the service failed after earlier chunks were predicted."""

    error: ServiceError
    first_line: int  # the first file line of the chunk that failed
    rows_left: int  # valid rows from there on, not predicted


@dataclass
class BatchOutcome:
    """Predictions for the good rows (a table), the rejected rows, and which model answered.

    ``stopped`` is set when the service failed part-way: the table then holds
    only the rows predicted before, which are kept rather than thrown away.
    """

    predictions: pd.DataFrame
    rejected: list[RejectedLine] = field(default_factory=list)
    model_versions: set[str] = field(default_factory=set)
    stopped: StoppedPart | None = None

    def rejected_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"line": item.line, "reason": item.reason, "detail": item.detail, "row": ",".join(item.fields)}
                for item in self.rejected
            ],
            columns=["line", "reason", "detail", "row"],
        )


@dataclass(frozen=True)
class PredictedFile:
    """An uploaded file's outcome and which file it was, kept for the page: the uploader forgets the file
    when the page is left, and Streamlit's ``file_id`` tells a rerun from a new upload of the same name."""

    file_id: str
    file_name: str
    outcome: BatchOutcome


@dataclass(frozen=True)
class RawCsv:
    """An uploaded file's rows as strings in raw-format column order."""

    frame: pd.DataFrame
    has_label: bool
    has_header: bool
    # Blank lines before the header (or the first row), left out before parsing.
    leading_blank_lines: int = 0

    @property
    def first_line(self) -> int:
        """The file line number of the first data row (1-based), for messages."""
        return self.leading_blank_lines + (2 if self.has_header else 1)


# Blank lines at the start of a file (after a UTF-8 BOM, if any): pandas would take the first as the header.
_LEADING_BLANK_LINES = re.compile(rb"(?:\xef\xbb\xbf)?((?:[ \t]*(?:\r\n|\r|\n))+)")


def count_lines(content: bytes) -> int:
    """Lines as pandas splits them: ends of ``\\n``, ``\\r\\n`` or a lone ``\\r``, plus an unended last line."""
    ends = content.count(b"\n") + content.count(b"\r") - content.count(b"\r\n")
    return ends + (not content.endswith((b"\n", b"\r")))


def read_raw_csv(content: bytes) -> RawCsv:
    """Read an uploaded file; ``has_label`` when it has a ``Cover_Type`` column.

    Accepts the 13 raw columns or the 12 feature columns, with a header (any
    column order) or without one (raw-format order). A file over
    ``MAX_UPLOAD_MB`` or ``MAX_ROWS`` is refused before (or while) parsing it,
    never after: parsing costs several times the file's size in memory.
    """
    if not content.strip():
        raise CsvFormatError("the file is empty")
    if len(content) > MAX_UPLOAD_BYTES:
        # The uploader's own cap is enforced by the browser only; a client posting to Streamlit's
        # upload endpoint directly is held to ``server.maxUploadSize`` alone, so check again here.
        raise CsvFormatError(
            f"{len(content) / 2**20:.1f} MB; the UI reads files of at most {MAX_UPLOAD_MB} MB "
            f"(at most {MAX_ROWS:,} rows)"
        )
    lines = count_lines(content)
    if lines > MAX_LINES + 1:  # + 1: a header
        raise CsvFormatError(
            f"{lines:,} lines; the UI reads files of at most {MAX_LINES:,} lines (at most {MAX_ROWS:,} rows)"
        )
    try:
        with warnings.catch_warnings():
            # pandas only warns when a row has more fields than the header, and drops the extra ones.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = _read_csv(content)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CsvFormatError(f"not a readable CSV: {error}") from error
    if raw.frame.empty:
        # A header alone (or with blank lines) would otherwise be "predicted": 0 rows, shown as a success.
        raise CsvFormatError("no data rows below the header")
    return raw


def _read_csv(content: bytes) -> RawCsv:
    """The header decision and the rows, for ``read_raw_csv`` (which maps pandas' errors to ``CsvFormatError``)."""
    leading = _LEADING_BLANK_LINES.match(content)
    leading_blank_lines = count_lines(leading.group(1)) if leading else 0
    if leading:
        content = content[leading.end() :]
    # The first line alone: is it a header, and which columns does the file have?
    header = [str(name).strip() for name in pd.read_csv(io.BytesIO(content), nrows=0, **_CSV_OPTIONS).columns]
    if set(FEATURE_COLUMNS) <= set(header):
        has_label = LABEL_COLUMN in header
        keep = list(RAW_COLUMNS if has_label else FEATURE_COLUMNS)
        frame = _read_rows(content, header=0, names=header, keep=keep)
        return RawCsv(frame, has_label, has_header=True, leading_blank_lines=leading_blank_lines)
    if len(header) in (len(FEATURE_COLUMNS), len(RAW_COLUMNS)) and not set(header) & set(RAW_COLUMNS):
        # No header: the first line is data, in raw-format order.
        has_label = len(header) == len(RAW_COLUMNS)
        columns = list(RAW_COLUMNS if has_label else FEATURE_COLUMNS)
        frame = _read_rows(content, header=None, names=columns, keep=columns)
        return RawCsv(frame, has_label, has_header=False, leading_blank_lines=leading_blank_lines)
    missing = [name for name in FEATURE_COLUMNS if name not in header]
    raise CsvFormatError(
        f"expected the 13 raw-format columns ({', '.join(RAW_COLUMNS)}) or the 12 feature columns; "
        f"missing {', '.join(missing)}"
    )


_CSV_OPTIONS: dict[str, Any] = {
    "dtype": str,
    "keep_default_na": False,
    "skipinitialspace": True,
    # Never take a column as the index: a first row with one field too many would shift every column.
    "index_col": False,
    # Blank lines are read (as empty rows) and dropped in ``_read_rows``, so that the index stays the
    # file line minus ``first_line``: the line numbers of rejects are the ones an editor shows.
    "skip_blank_lines": False,
}


def _read_rows(content: bytes, *, header: int | None, names: list[str], keep: list[str]) -> pd.DataFrame:
    """The non-blank data rows, columns ``keep``; refuse the file once it has more than ``MAX_ROWS``.

    Lines are read in pieces of ``PIECE_LINES``, so at most one piece past the
    limit is ever parsed: the rest of an oversized file is neither parsed nor
    held as a frame. (Pieces of "the rows still allowed" would be a piece per
    line near the limit, and a file padded with blank lines would take hours.)
    ``names`` are the file's columns (its header, stripped, or the raw-format names).
    """
    pieces: list[pd.DataFrame] = []
    rows = 0
    with pd.read_csv(io.BytesIO(content), header=header, iterator=True, **_CSV_OPTIONS) as reader:
        while rows <= MAX_ROWS:
            try:
                piece = reader.get_chunk(PIECE_LINES)
            except StopIteration:
                break
            if piece.empty:
                break
            piece.columns = names
            piece = piece[keep]
            piece = piece[piece.apply(lambda column: column.str.strip() != "").any(axis=1)]
            rows += len(piece)
            pieces.append(piece)
    if rows > MAX_ROWS:
        raise CsvFormatError(f"more than {MAX_ROWS:,} rows; the UI predicts at most {MAX_ROWS:,} rows per file")
    return pd.concat(pieces) if pieces else pd.DataFrame(columns=keep, dtype=str)


def validate_rows(
    frame: pd.DataFrame, first_line: int
) -> tuple[list[tuple[int, dict[str, int | str]]], list[RejectedLine]]:
    """Split the rows into (line, record) pairs to send and rejected lines with reasons."""
    good: list[tuple[int, dict[str, int | str]]] = []
    rejected: list[RejectedLine] = []
    for position, *values in frame[list(FEATURE_COLUMNS)].itertuples(name=None):
        line = first_line + int(position)
        try:
            good.append((line, parse_features(list(values))))
        except RowError as error:
            rejected.append(RejectedLine(line, [str(value) for value in values], error.reason.value, error.detail))
    return good, rejected


def refused_indices(details: Any) -> dict[int, str]:
    """Record index -> reason, from the inference service's 422 details (FastAPI ``loc`` or explicit index).

    A record refused for several fields gets every listed reason, joined, so the
    rejects table says all that is wrong with the row, not the last thing named.
    """
    reasons: dict[int, list[str]] = {}
    items = details if isinstance(details, list) else [details]
    for item in items:
        if not isinstance(item, dict):
            continue
        index = item.get("index", item.get("record"))
        if index is None:
            index = next((part for part in item.get("loc", []) if isinstance(part, int)), None)
        if index is None:
            continue
        field_name = item.get("field") or next(
            (part for part in reversed(item.get("loc", [])) if isinstance(part, str) and part in FEATURE_COLUMNS), None
        )
        message = str(item.get("reason") or item.get("msg") or item)
        reasons.setdefault(int(index), []).append(f"{field_name}: {message}" if field_name else message)
    return {index: "; ".join(parts) for index, parts in reasons.items()}


Pair = tuple[int, dict[str, int | str]]  # (file line, record)


def _refused_by_api(chunk: list[Pair], error: InvalidInput) -> dict[int, str]:
    """Positions in ``chunk`` the 422 refuses, with the reasons; re-raises a refusal of the request as a whole.

    A 422 naming no record (e.g. too many instances) is the service's own message
    to show. One naming a record the chunk does not have cannot be acted on: said
    with the file's lines, since an index inside a retried chunk means nothing to the user.
    """
    refused = refused_indices(error.details)
    if not refused:
        raise error
    unknown = sorted(index for index in refused if not 0 <= index < len(chunk))
    if unknown:
        raise UnexpectedResponse(
            SERVICE,
            f"POST /predict refused record {unknown[0]} of a request of {len(chunk)} records "
            f"(file lines {chunk[0][0]}..{chunk[-1][0]}): no such record",
            SAME_RELEASE_HINT,
        ) from error
    return refused


def _predict_accepted(
    client: InferenceClient, chunk: list[Pair]
) -> tuple[list[Pair], PredictionResult | None, list[RejectedLine]]:
    """Predict ``chunk``, moving the records the service refuses (422) to the rejects until it accepts the rest.

    The service lists at most 100 problems per 422 (``errors_total`` counts the
    others), so one retry is not enough: each round removes every record the 422
    names, at least one. A refusal after ``MAX_REFUSAL_ROUNDS`` such rounds stops
    with an error: records refused for many fields each free only a few per round, and a
    service of another release refusing everything would otherwise cost hundreds
    of requests per chunk before saying so. Returns the records predicted, their
    result (None when every record was refused) and the rejects.
    """
    rejected: list[RejectedLine] = []
    for refusals in range(MAX_REFUSAL_ROUNDS + 1):
        try:
            return chunk, client.predict([record for _, record in chunk]), rejected
        except InvalidInput as error:
            refused = _refused_by_api(chunk, error)
            if refusals == MAX_REFUSAL_ROUNDS:
                raise UnexpectedResponse(
                    SERVICE,
                    f"POST /predict still refuses records of file lines {chunk[0][0]}..{chunk[-1][0]} after "
                    f"{refusals} rounds that each took refused records away ({len(rejected)} so far)",
                    SAME_RELEASE_HINT,
                ) from error
        rejected += [
            RejectedLine(line, [str(value) for value in record.values()], "refused_by_api", refused[position])
            for position, (line, record) in enumerate(chunk)
            if position in refused
        ]
        chunk = [pair for position, pair in enumerate(chunk) if position not in refused]
        if not chunk:
            break
    return chunk, None, rejected


def predict_csv(client: InferenceClient, raw: RawCsv) -> BatchOutcome:
    """Validate, predict the good rows in chunks, and gather the table and the rejects."""
    good, rejected = validate_rows(raw.frame, raw.first_line)
    rows: list[dict[str, Any]] = []
    versions: set[str] = set()
    stopped: StoppedPart | None = None
    for start in range(0, len(good), CHUNK_SIZE):
        try:
            chunk, result, refused = _predict_accepted(client, good[start : start + CHUNK_SIZE])
        except ServiceError as error:
            if start == 0:
                raise  # nothing predicted: the error is the whole outcome
            # Kept in the session with the outcome: without its traceback (and its causes'), whose frames
            # would keep this call's locals, the whole parsed file, alive until the next upload.
            error.__cause__ = error.__context__ = None
            stopped = StoppedPart(error.with_traceback(None), first_line=good[start][0], rows_left=len(good) - start)
            break
        rejected += refused
        if result is None:
            continue
        versions.add(str(result.model_version))
        for (line, record), prediction in zip(chunk, result.predictions, strict=True):
            probabilities = {cover_type_name(k): v for k, v in prediction.probabilities.items()}
            rows.append(
                {
                    "line": line,
                    "predicted_cover_type": prediction.cover_type,
                    "predicted_name": prediction.cover_type_name,
                    "probability": max(probabilities.values()) if probabilities else None,
                    **record,
                }
            )
    table = pd.DataFrame(rows)
    if raw.has_label and not table.empty:
        # The file's own label beside the prediction, for comparison.
        labels = raw.frame[LABEL_COLUMN]
        table.insert(4, LABEL_COLUMN, [labels.loc[line - raw.first_line] for line in table["line"]])
    rejected.sort(key=lambda item: item.line)
    return BatchOutcome(predictions=table, rejected=rejected, model_versions=versions, stopped=stopped)


def agreement(table: pd.DataFrame) -> float | None:
    """Share of predicted rows whose given ``Cover_Type`` (1..7) equals the prediction, when labels are present."""
    if LABEL_COLUMN not in table or table.empty:
        return None
    labels = pd.to_numeric(table[LABEL_COLUMN], errors="coerce")
    if not labels.isin(list(COVER_TYPE_NAMES)).all():
        return None  # 0..6 or malformed labels: no comparison rather than a wrong one
    return float((labels == table["predicted_cover_type"]).mean())
