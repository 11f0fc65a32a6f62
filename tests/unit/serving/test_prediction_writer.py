"""The prediction log writer: contract layout and columns, atomic files, flush on close, bounded."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from airflow_mlops.core import prediction_log as contract
from airflow_mlops.serving.models import Batch
from airflow_mlops.serving.prediction_writer import PredictionLogWriter


def _numeric(n: int, start: float = 0.0) -> Batch:
    return Batch(["a", "b"], n, matrix=np.arange(start, start + 2 * n, dtype=float).reshape(n, 2))


def test_close_writes_buffered_rows_in_the_contract_layout(tmp_path):
    w = PredictionLogWriter(tmp_path, flush_seconds=3600)
    w.add("bc", "3", "r1", _numeric(2), np.array([0, 1]))
    w.add("bc", "4", "r2", _numeric(1, start=10), np.array([1]))
    assert not list(tmp_path.rglob("*.parquet"))  # nothing on the request path
    w.close()
    files = list(tmp_path.rglob("*.parquet"))
    assert len(files) == 1
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert files[0].parent == tmp_path / "bc" / f"date={day}" and files[0].name.startswith("part-")
    table = pq.read_table(files[0])
    assert table.column_names == ["a", "b", *contract.META_COLUMNS]
    assert table.schema.field(contract.TIMESTAMP).type == pa.timestamp("us", tz="UTC")
    d = table.to_pydict()
    assert d["a"] == [0.0, 2.0, 10.0] and d["b"] == [1.0, 3.0, 11.0]
    assert d[contract.PREDICTION] == [0, 1, 1]
    assert d[contract.MODEL_VERSION] == ["3", "3", "4"]
    assert d[contract.REQUEST_ID] == ["r1", "r1", "r2"]
    assert d[contract.MODEL_NAME] == ["bc"] * 3
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_files_roll_over_by_rows_in_the_background(tmp_path):
    w = PredictionLogWriter(tmp_path, flush_seconds=3600, flush_rows=10)
    for i in range(3):
        w.add("bc", "1", f"r{i}", _numeric(10), np.zeros(10, dtype=int))
        deadline = time.monotonic() + 10
        while w.files_written < i + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert w.files_written == 3
    w.close()
    assert sum(pq.read_metadata(f).num_rows for f in tmp_path.rglob("*.parquet")) == 30


def test_mixed_feature_sets_and_text_columns_share_a_file(tmp_path):
    w = PredictionLogWriter(tmp_path, flush_seconds=3600)
    cols = {"colour": np.array(["red", None], dtype=object), "size": np.array([1.0, 2.0])}
    w.add("m", "1", "r1", Batch(["colour", "size"], 2, columns=cols), np.array(["x", "y"], dtype=object))
    w.add("m", "2", "r2", _numeric(1), np.array(["z"], dtype=object))
    w.close()
    (f,) = tmp_path.rglob("*.parquet")
    d = pq.read_table(f).to_pydict()
    assert d["colour"] == ["red", None, None] and d["a"] == [None, None, 0.0]
    assert d[contract.PREDICTION] == ["x", "y", "z"]


def test_rows_beyond_the_buffer_bound_drop_the_oldest_and_are_counted(tmp_path):
    dropped = []
    w = PredictionLogWriter(tmp_path, flush_seconds=3600, max_pending_rows=5, on_drop=dropped.append)
    w.add("bc", "1", "r1", _numeric(4), np.zeros(4))
    w.add("bc", "1", "r2", _numeric(2), np.zeros(2))  # no room: the oldest request (r1) goes
    w.add("bc", "1", "r3", _numeric(9), np.zeros(9))  # bigger than the bound itself: dropped
    assert w.held_rows == 2
    w.close()
    w.add("bc", "1", "r4", _numeric(1), np.zeros(1))  # after close: nothing is written any more
    assert dropped == [4, 9, 1] and w.rows_dropped == 14
    assert w.rows_written == 2
    (f,) = tmp_path.rglob("*.parquet")
    assert set(pq.read_table(f).to_pydict()[contract.REQUEST_ID]) == {"r2"}
