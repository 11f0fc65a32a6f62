"""Reading training data: headers read as written, folders that must agree, unreadable files named."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_mlops.core.data import read_bytes_table, read_table
from airflow_mlops.core.errors import MlopsInputError


def test_duplicated_csv_header_is_refused_not_renamed(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("x,target,target\n1,0,0\n2,1,1\n")
    assert "target.1" in pd.read_csv(f).columns  # what pandas alone would train on
    with pytest.raises(MlopsInputError, match=r"names column 'target' twice.*'target\.1'"):
        read_table(f)
    with pytest.raises(MlopsInputError, match="names column 'target' twice"):
        read_bytes_table(f.read_bytes(), ".csv", "d.csv")


def test_duplicated_parquet_columns_are_refused(tmp_path):
    pq.write_table(pa.table([[1, 2], [0, 1], [0, 1]], names=["x", "y", "y"]), tmp_path / "d.parquet")
    with pytest.raises(MlopsInputError, match="names column 'y' twice"):
        read_table(tmp_path / "d.parquet")


def test_folder_files_must_share_columns(tmp_path):
    pd.DataFrame({"mean radius": [1.0], "target": [0]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"radius_mean": [1.0], "target": [1]}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(
        MlopsInputError,
        match=r"b\.parquet has \['radius_mean'\] that a\.csv lacks and lacks \['mean radius'\]",
    ):
        read_table(tmp_path)


def test_folder_with_the_same_columns_in_another_order_reads(tmp_path):
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "1.csv", index=False)
    pd.DataFrame({"b": [4], "a": [3]}).to_parquet(tmp_path / "2.parquet")
    assert read_table(tmp_path).sort_values("a").to_dict("list") == {"a": [1, 3], "b": [2, 4]}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.parquet", b"PAR1" + b"\x00" * 50, "not a readable Parquet file"),
        ("t.parquet", b"x,y\n1,2\n", "not a readable Parquet file"),
        ("t.csv", b"\x89PNG\xff\xfe\xc3" * 50, "not UTF-8 text"),
        ("t.csv", b"x,y\n1,2\n3,4,5\n", "not a well-formed CSV"),
        ("t.csv", b"", "is empty"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MlopsInputError, match=message):
        read_table(tmp_path / name)
    with pytest.raises(MlopsInputError, match=message):
        read_bytes_table(content, "." + name.rsplit(".", 1)[1])
