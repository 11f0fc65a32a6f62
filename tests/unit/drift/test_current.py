"""Current data read in chunks (files, folders, the prediction log) equals reading it whole."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core import prediction_log as plog
from airflow_mlops.core.drift import build_profile, detect_drift
from airflow_mlops.core.drift.current import summarize_path, summarize_prediction_log
from airflow_mlops.core.errors import MlopsInputError


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"x": rng.normal(shift, 1, n), "y": rng.integers(0, 50, n), "c": rng.choice(list("abc"), n)}
    )


def _scores(report) -> dict:
    return {c.column: (c.test, round(c.score, 12), c.drifted) for c in report.columns}


def test_chunks_of_a_folder_give_the_same_report_as_the_whole_frame(tmp_path: Path) -> None:
    ref = _frame(5000, 0)
    parts = [_frame(3000, s, 0.1) for s in (1, 2, 3)]
    parts[0].to_csv(tmp_path / "a.csv", index=False)
    parts[1].to_parquet(tmp_path / "b.parquet", index=False)
    parts[2].to_parquet(tmp_path / "c.parquet", index=False)
    whole = pd.concat(parts, ignore_index=True)
    profile = build_profile(ref)
    kinds = {k: v["kind"] for k, v in profile["columns"].items()}
    chunked = summarize_path(tmp_path, kinds, chunk_rows=700)
    assert chunked.n_rows == 9000
    assert _scores(detect_drift(profile, chunked)) == _scores(detect_drift(profile, whole))


def _write_log(log_dir: Path, model: str, frame: pd.DataFrame, start: datetime, step: timedelta) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = [start + i * step for i in range(len(frame))]
    table = frame.assign(
        **{
            plog.PREDICTION: 1,
            plog.MODEL_NAME: model,
            plog.MODEL_VERSION: "3",
            plog.REQUEST_ID: [f"r{i}" for i in range(len(frame))],
        }
    )
    table[plog.TIMESTAMP] = pd.to_datetime(ts, utc=True).astype("datetime64[us, UTC]")
    for day, part in table.groupby(table[plog.TIMESTAMP].dt.date):
        folder = log_dir / model / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pandas(part, preserve_index=False), folder / f"part-{len(ts)}-abcd1234.parquet"
        )


def test_prediction_log_window_drops_meta_columns_and_filters_time(tmp_path: Path) -> None:
    start = datetime(2026, 3, 1, 22, 0, tzinfo=timezone.utc)
    frame = _frame(480, 5)
    _write_log(tmp_path, "bc", frame, start, timedelta(minutes=1))  # 8 hours over two days
    got = plog.read_window(tmp_path, "bc", start + timedelta(hours=1), start + timedelta(hours=3))
    assert list(got.columns) == ["x", "y", "c"]
    assert len(got) == 120
    pd.testing.assert_frame_equal(got, frame.iloc[60:180].reset_index(drop=True), check_dtype=False)
    assert plog.read_window(tmp_path, "other", start, start + timedelta(hours=1)).empty
    with pytest.raises(MlopsInputError, match="window"):
        plog.read_window(tmp_path, "bc", start, start)
    # Naive datetimes are UTC.
    naive = plog.read_window(tmp_path, "bc", datetime(2026, 3, 2, 0, 0), datetime(2026, 3, 2, 1, 0))
    assert len(naive) == 60


def test_prediction_log_window_drives_the_engine(tmp_path: Path) -> None:
    start = datetime(2026, 3, 1, 0, 0, tzinfo=timezone.utc)
    ref = _frame(3000, 7)
    _write_log(
        tmp_path, "bc", pd.concat([_frame(200, 8), _frame(200, 9, shift=3.0)]), start, timedelta(seconds=10)
    )
    kinds = {k: v["kind"] for k, v in build_profile(ref)["columns"].items()}
    calm = summarize_prediction_log(tmp_path, "bc", kinds, start, start + timedelta(seconds=2000))
    shifted = summarize_prediction_log(
        tmp_path, "bc", kinds, start + timedelta(seconds=2000), start + timedelta(hours=2)
    )
    assert calm.n_rows == 200 and shifted.n_rows == 200
    x_calm = {c.column: c for c in detect_drift(ref, calm).columns}["x"]
    x_shift = {c.column: c for c in detect_drift(ref, shifted).columns}["x"]
    assert not x_calm.drifted and x_shift.drifted
