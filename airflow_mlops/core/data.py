"""Reading tabular data (CSV or Parquet files, or folders of them)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

    Every file's header is read first: duplicated column names (which pandas would silently rename to
    ``name.1``) and, in a folder, files whose columns differ are errors naming the files and columns.

    :param path: file or folder.
    :param columns: read only these columns (all when None).
    """
    import pandas as pd

    files = table_files(path)
    headers = {f: file_columns(f) for f in files}
    for f, names in headers.items():
        check_unique_columns(names, f"Data file {f}")
    if len(files) > 1:
        check_same_columns(headers, Path(path))
    frames = [_read_file(f, columns) for f in files]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def file_columns(f: Path | io.BytesIO, suffix: str | None = None, name: str | None = None) -> list[str]:
    """The column names in a CSV or Parquet file's header, exactly as written (no renaming of duplicates).

    :param f: the file, or its bytes in a buffer.
    :param suffix: the format (default: the file's suffix).
    :param name: how to name the file in messages.
    """
    import pandas as pd

    suffix = (suffix or Path(str(getattr(f, "name", f))).suffix).lower()
    where = name or str(f)
    if isinstance(f, io.BytesIO):
        f.seek(0)
    try:
        if suffix == ".csv":
            try:
                head = pd.read_csv(f, header=None, nrows=1, dtype=str, keep_default_na=False)
            except pd.errors.EmptyDataError:
                return []
            return [str(c) for c in head.iloc[0].tolist()] if len(head) else []
        import pyarrow.parquet as pq

        schema = pq.ParquetFile(f).schema_arrow
        index = {c for c in ((schema.pandas_metadata or {}).get("index_columns") or []) if isinstance(c, str)}
        return [n for n in schema.names if n not in index]
    except Exception as e:  # any unreadable header is the file's fault
        raise _unreadable(where, suffix, e) from e
    finally:
        if isinstance(f, io.BytesIO):
            f.seek(0)


def check_unique_columns(names: list[Any], where: str) -> None:
    """Refuse duplicated column names (also names equal but for surrounding spaces).

    :param names: the column names, as written.
    :param where: what holds them, for the message (e.g. ``Data file x.csv``).
    """
    seen: dict[str, str] = {}
    for name in names:
        key = str(name).strip()
        if key in seen:
            same = str(name) == seen[key]
            what = (
                f"twice ({name!r})"
                if same
                else f"as {seen[key]!r} and {str(name)!r} (differing only in spaces)"
            )
            raise MlopsInputError(
                f"{where} names column {key!r} {what}: column names must be unique. Rename or drop one of "
                "them (pandas would silently rename the second to "
                f"{key + '.1'!r} and train on it as a feature)."
            )
        seen[key] = str(name)


def check_same_columns(headers: dict[Path, list[str]], folder: Path) -> None:
    """Refuse a folder whose files do not all have the same columns; name the files and columns.

    :param headers: each file's column names.
    :param folder: the folder, for the message.
    """
    items = [(f, cols) for f, cols in headers.items() if cols]  # empty files add no rows
    if not items:
        return
    ref_file, ref_cols = items[0]
    ref = set(ref_cols)
    diffs = []
    for f, cols in items[1:]:
        extra, missing = [c for c in cols if c not in ref], [c for c in ref_cols if c not in set(cols)]
        if extra or missing:
            parts = [f"has {extra} that {ref_file.name} lacks" if extra else "",
                     f"lacks {missing}" if missing else ""]  # fmt: skip
            diffs.append(f"{_rel(f, folder)} {' and '.join(p for p in parts if p)}")
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more files" if len(diffs) > 5 else "")
        raise MlopsInputError(
            f"The files of folder {folder} have different columns (compared with {_rel(ref_file, folder)}): "
            f"{shown}. Give every file the same columns (rename or drop them), or keep only one schema in the folder."
        )


def _rel(f: Path, folder: Path) -> str:
    try:
        return str(f.relative_to(folder))
    except ValueError:
        return str(f)


def _unreadable(where: str, suffix: str, e: BaseException) -> MlopsInputError:
    """The error for a file that cannot be parsed in its format."""
    if suffix == ".csv":
        if isinstance(e, UnicodeDecodeError):
            return MlopsInputError(
                f"{where} is not UTF-8 text ({e}): it is probably binary (e.g. a Parquet file named .csv) or "
                "in another encoding. Give a UTF-8 CSV file, or name a Parquet file .parquet."
            )
        return MlopsInputError(
            f"{where} is not a well-formed CSV file ({e}): fix the rows it names, or re-export the file."
        )
    return MlopsInputError(
        f"{where} is not a readable Parquet file ({e}): it is truncated, corrupted or in another format. "
        "Re-export or re-copy it (a CSV file must be named .csv)."
    )


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


def read_bytes_table(raw: bytes, suffix: str, name: str = "the data file") -> pd.DataFrame:
    """Read a CSV or Parquet file held in memory (e.g. read from DVC), with the header checks of
    :func:`read_table`.

    :param raw: the file's bytes.
    :param suffix: the file's suffix, which says its format.
    :param name: how to name the file in messages.
    """
    import pandas as pd

    suffix = suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise MlopsInputError(f"Unsupported data format {suffix!r} of {name}: give a .csv or .parquet file.")
    buf = io.BytesIO(raw)
    check_unique_columns(file_columns(buf, suffix, name), str(name))
    try:
        if suffix == ".csv":
            return pd.read_csv(buf)
        return pd.read_parquet(buf)
    except pd.errors.EmptyDataError as e:
        raise MlopsInputError(f"{name} is empty: it needs a header row and data rows.") from e
    except Exception as e:  # a parse error is the file's fault
        raise _unreadable(str(name), suffix, e) from e


def _read_file(f: Path, columns: list[str] | None) -> pd.DataFrame:
    import pandas as pd

    try:
        if f.suffix.lower() == ".csv":
            return pd.read_csv(f, usecols=columns)
        return pd.read_parquet(f, columns=columns)
    except pd.errors.EmptyDataError as e:
        raise MlopsInputError(f"Data file {f} is empty: it needs a header row and data rows.") from e
    except OSError as e:
        if not f.exists():
            raise MlopsInputError(f"Data file {f} disappeared while being read: check the path.") from e
        raise _unreadable(f"Data file {f}", f.suffix.lower(), e) from e
    except (ValueError, TypeError) as e:  # ParserError, UnicodeDecodeError and ArrowInvalid are ValueErrors
        if columns is not None and "usecols" in str(e).lower():
            raise MlopsInputError(f"Data file {f} lacks some of the columns {columns}: {e}.") from e
        raise _unreadable(f"Data file {f}", f.suffix.lower(), e) from e
