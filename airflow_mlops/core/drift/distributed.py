"""The drift check's current summaries computed on a Dask cluster (``engine="dask"``).

Each file of a partitioned Parquet (or CSV) dataset, or each prediction-log file of the window, is one
task: a worker reads it in chunks and returns its :class:`~airflow_mlops.core.drift.current.TableSummary`
(exact while the whole dataset is small, else sketches of bounded size: tens of KB per column). The
summaries are merged here, so the statistics and verdicts are those of the single-machine run on the
same data (equal scores while exact; sketched columns agree within the sketches' rank error, which the
KS test allows for). Nothing but the summaries crosses the network; the data never leaves the workers'
storage, which they must see at the same paths.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_mlops.core.drift.current import EXACT_LIMIT, CurrentData, TableSummary, table_summary
from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError

#: Seconds to reach the scheduler before the check fails (a dead cluster is reported, never waited on).
CONNECT_TIMEOUT = 10.0


def _file_summary(
    path: str,
    kinds: dict[str, str],
    chunk_rows: int,
    exact_limit: int,
    window: tuple[datetime, datetime] | None,
) -> TableSummary:
    """On a worker: the summary of one file (a prediction-log file: only the rows of the window)."""
    if window is not None:
        from airflow_mlops.core.prediction_log import iter_file_window

        return table_summary(
            iter_file_window(Path(path), window[0], window[1], chunk_rows), kinds, exact_limit
        )
    from airflow_mlops.core.data import iter_table_chunks

    return table_summary(iter_table_chunks(path, chunk_rows=chunk_rows), kinds, exact_limit)


def _rows(files: list[Path]) -> int | None:
    """Rows of the files from Parquet footers (None: a CSV file, not countable without reading it)."""
    import pyarrow.parquet as pq

    total = 0
    for f in files:
        if f.suffix.lower() != ".parquet":
            return None
        try:
            total += int(pq.ParquetFile(f).metadata.num_rows)
        except Exception:  # noqa: BLE001 - a half-written file: its task reads what there is
            continue
    return total


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> Any:
    """A ``dask.distributed`` client of the scheduler at ``address``.

    :raises MlopsInputError: no address.
    :raises MlopsServiceError: the scheduler does not answer within ``timeout`` seconds.
    """
    from airflow_mlops.core.redact import redact

    if not address:
        raise MlopsInputError(
            "engine='dask' needs a scheduler address: give a Dask connection (host tcp://scheduler:8786)."
        )
    import distributed

    client_class: Any = distributed.Client  # untyped
    try:
        return client_class(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise MlopsServiceError(
            f"The Dask scheduler at {redact(address)} did not answer within {timeout:.0f}s ({redact(e)}): "
            "check that it runs and the connection's host and port."
        ) from None


def summarize_on_dask(
    address: str | Any,
    files: list[Path],
    kinds: dict[str, str],
    *,
    chunk_rows: int = 250_000,
    exact_limit: int = EXACT_LIMIT,
    window: tuple[datetime, datetime] | None = None,
) -> CurrentData:
    """Summarize ``files`` on the cluster (one task per file) and merge the summaries.

    :param address: the scheduler's address, or a connected ``distributed.Client``.
    :param files: the data files (every worker reads them at these paths).
    :param kinds: ``{column: kind}`` of the reference.
    :param chunk_rows: rows a worker reads at a time.
    :param exact_limit: values per numeric column kept exactly. Past it (for the whole dataset, counted
        from the Parquet footers), every partition sketches from its first row, so no partition ships
        raw values.
    :param window: prediction-log files: only rows with ``start <= _timestamp < end``.
    """
    if not files:
        return TableSummary(kinds).finish()
    rows = _rows(files)
    per_task_limit = exact_limit if rows is not None and rows <= exact_limit else 0
    own = isinstance(address, str)
    client = connect(address) if isinstance(address, str) else address
    try:
        futures = client.map(
            _file_summary,
            [str(f) for f in files],
            kinds=kinds,
            chunk_rows=chunk_rows,
            exact_limit=per_task_limit,
            window=window,
            pure=False,
        )
        merged = TableSummary(kinds, exact_limit)
        # Merged in file order: the exact values (and so every score) equal the single-machine run's.
        for summary in client.gather(futures):
            merged.merge(summary)
        return merged.finish()
    finally:
        if own:
            client.close()


def dataset_files(path: str | os.PathLike[str]) -> list[Path]:
    """The data files of a file or folder, in the order the single-machine run reads them."""
    from airflow_mlops.core.data import table_files

    return list(table_files(path))
