"""Reading tabular data (CSV or Parquet files, or folders of them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_mlops.core.errors import MlopsInputError

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def table_files(path: str | os.PathLike[str]) -> list[Path]:
    """Return the data files behind ``path``: the file itself, or every CSV/Parquet file of a folder.

    :param path: a CSV or Parquet file, or a folder holding such files (searched recursively).
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TABLE_SUFFIXES)
        if not files:
            raise MlopsInputError(f"Folder {p} holds no CSV or Parquet file: put data files in it.")
        return files
    if not p.exists():
        raise MlopsInputError(f"Data file {p} does not exist: check the path (or the DVC path and revision).")
    if p.suffix.lower() not in TABLE_SUFFIXES:
        raise MlopsInputError(f"Data file {p} is neither CSV nor Parquet: give a .csv or .parquet file.")
    return [p]


def read_table(path: str | os.PathLike[str], columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV/Parquet file or a folder of them into one DataFrame.

    :param path: file or folder.
    :param columns: read only these columns (all when None).
    """
    import pandas as pd

    frames = [_read_file(f, columns) for f in table_files(path)]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def iter_table_chunks(
    path: str | os.PathLike[str], chunk_rows: int = 250_000, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """Yield the rows of a file or folder in chunks of at most ``chunk_rows``, with bounded memory.

    :param path: file or folder.
    :param chunk_rows: the largest chunk to hold in memory at once.
    :param columns: read only these columns (all when None).
    """
    import pandas as pd

    for f in table_files(path):
        if f.suffix.lower() == ".csv":
            try:
                yield from pd.read_csv(f, chunksize=chunk_rows, usecols=columns)
            except pd.errors.EmptyDataError:
                continue
        else:
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(f).iter_batches(batch_size=chunk_rows, columns=columns):
                yield batch.to_pandas()


def read_bytes_table(raw: bytes, suffix: str) -> pd.DataFrame:
    """Read a CSV or Parquet file held in memory (e.g. read from DVC).

    :param raw: the file's bytes.
    :param suffix: the file's suffix, which says its format.
    """
    import io

    import pandas as pd

    if suffix.lower() == ".csv":
        return pd.read_csv(io.BytesIO(raw))
    if suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(io.BytesIO(raw))
    raise MlopsInputError(f"Unsupported data format {suffix!r}: give a .csv or .parquet file.")


def _read_file(f: Path, columns: list[str] | None) -> pd.DataFrame:
    import pandas as pd

    try:
        if f.suffix.lower() == ".csv":
            return pd.read_csv(f, usecols=columns)
        return pd.read_parquet(f, columns=columns)
    except pd.errors.EmptyDataError as e:
        raise MlopsInputError(f"Data file {f} is empty: it needs a header row and data rows.") from e
