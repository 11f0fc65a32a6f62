"""The gateway's prediction log: rolling Parquet files that the DriftSensor reads as its current window.

Layout: ``<log_dir>/<model_name>/date=YYYY-MM-DD/part-<unix_ms>-<uuid8>.parquet``. Each file holds the
raw feature columns of the requests plus the columns below (names start with an underscore so that
they never collide with a feature).

Ground truth sent to ``/feedback`` goes to ``<log_dir>/<model_name>/feedback/date=YYYY-MM-DD/*.parquet``
(``_request_id``, ``_row``: the row within a batch request, ``_label``, ``_timestamp``), so that the
labelled production traffic can be joined back to its features for retraining.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_mlops.core.errors import MlopsInputError

if TYPE_CHECKING:
    import pandas as pd

PREDICTION = "_prediction"
MODEL_NAME = "_model_name"
MODEL_VERSION = "_model_version"
REQUEST_ID = "_request_id"
TIMESTAMP = "_timestamp"  # timestamp[us, tz=UTC]
META_COLUMNS = (PREDICTION, MODEL_NAME, MODEL_VERSION, REQUEST_ID, TIMESTAMP)
FEEDBACK_DIR = "feedback"
ROW = "_row"
LABEL = "_label"


def model_dir(log_dir: str | os.PathLike[str], model_name: str) -> Path:
    """The folder holding ``model_name``'s log files."""
    return Path(log_dir) / model_name


def window_files(
    log_dir: str | os.PathLike[str], model_name: str, start: datetime, end: datetime
) -> list[Path]:
    """Log files of ``model_name`` whose date partition overlaps ``[start, end)`` (UTC)."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise MlopsInputError(
            f"Prediction-log window [{start}, {end}) is empty: the end must follow the start."
        )
    root = model_dir(log_dir, model_name)
    if not root.is_dir():
        return []
    first, last = start.date(), end.date()
    files = []
    for part in sorted(root.glob("date=*")):
        try:
            day = date.fromisoformat(part.name.split("=", 1)[1])
        except ValueError:
            continue
        if first <= day <= last:
            files.extend(sorted(part.glob("*.parquet")))
    return files


def iter_window(
    log_dir: str | os.PathLike[str],
    model_name: str,
    start: datetime,
    end: datetime,
    chunk_rows: int = 250_000,
    keep_meta: bool = False,
) -> Iterator[pd.DataFrame]:
    """Yield the logged requests of ``model_name`` with ``start <= _timestamp < end`` in chunks.

    :param log_dir: the gateway's ``--log-dir``.
    :param model_name: registered model name (the log's first-level folder).
    :param start: window start (naive datetimes are UTC).
    :param end: window end, excluded.
    :param chunk_rows: rows read at a time.
    :param keep_meta: keep the meta columns (by default only the features are yielded).
    """
    start, end = _utc(start), _utc(end)
    for f in window_files(log_dir, model_name, start, end):
        yield from iter_file_window(f, start, end, chunk_rows, keep_meta)


def iter_file_window(
    f: Path, start: datetime, end: datetime, chunk_rows: int = 250_000, keep_meta: bool = False
) -> Iterator[pd.DataFrame]:
    """The rows of one log file with ``start <= _timestamp < end`` in chunks (see :func:`iter_window`;
    a file still being written, or a damaged one, yields nothing)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    lo = pa.scalar(_utc(start), type=pa.timestamp("us", tz="UTC"))
    hi = pa.scalar(_utc(end), type=pa.timestamp("us", tz="UTC"))
    try:
        pf = pq.ParquetFile(f)
    except (OSError, pa.ArrowInvalid):
        return  # a file the gateway is still writing, or a damaged one: skipped
    for batch in pf.iter_batches(batch_size=chunk_rows):
        ts = batch.column(TIMESTAMP)
        if ts.type != lo.type:
            ts = pc.cast(ts, lo.type)
        mask = pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))
        batch = batch.filter(mask)
        if batch.num_rows == 0:
            continue
        frame = batch.to_pandas()
        if not keep_meta:
            frame = frame.drop(columns=[c for c in META_COLUMNS if c in frame.columns])
        yield frame


def read_window(
    log_dir: str | os.PathLike[str], model_name: str, start: datetime, end: datetime, keep_meta: bool = False
) -> pd.DataFrame:
    """The logged requests of ``model_name`` in ``[start, end)`` as one DataFrame (meta columns dropped
    unless ``keep_meta``); empty when nothing was logged."""
    import pandas as pd

    frames = list(iter_window(log_dir, model_name, start, end, keep_meta=keep_meta))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def feedback_dir(log_dir: str | os.PathLike[str], model_name: str) -> Path:
    """The folder holding ``model_name``'s ground-truth files."""
    return model_dir(log_dir, model_name) / FEEDBACK_DIR


def read_labelled(
    log_dir: str | os.PathLike[str],
    model_name: str,
    target: str,
    start: datetime | None = None,
    end: datetime | None = None,
    keep_meta: bool = False,
) -> pd.DataFrame:
    """The logged requests whose ground truth came back: feature columns plus ``target``.

    :param log_dir: the gateway's ``--log-dir``.
    :param model_name: registered model name.
    :param target: name of the label column in the result.
    :param start: requests from (default: the whole log).
    :param end: requests before (default: now).
    :param keep_meta: keep the meta columns (prediction, model version, ...) too.
    """
    import pandas as pd

    start = start or datetime(1970, 1, 1, tzinfo=timezone.utc)
    end = end or datetime.now(timezone.utc)
    requests = read_window(log_dir, model_name, start, end, keep_meta=True)
    labels = _read_feedback(log_dir, model_name)
    if requests.empty or labels.empty:
        return pd.DataFrame()
    # A batch request logs one row per input, in order: number them to meet their labels.
    requests[ROW] = requests.groupby(REQUEST_ID, sort=False).cumcount()
    labels = labels.drop_duplicates([REQUEST_ID, ROW], keep="last")
    joined = requests.merge(labels[[REQUEST_ID, ROW, LABEL]], on=[REQUEST_ID, ROW], how="inner")
    joined = joined.rename(columns={LABEL: target})
    dropped = (ROW,) if keep_meta else (*META_COLUMNS, ROW)
    return joined.drop(columns=[c for c in dropped if c in joined.columns])


def _read_feedback(log_dir: str | os.PathLike[str], model_name: str) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames = []
    for f in sorted(feedback_dir(log_dir, model_name).glob("date=*/*.parquet")):
        try:
            frames.append(pq.read_table(f).to_pandas())
        except (OSError, pa.ArrowInvalid):
            continue  # still being written
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
