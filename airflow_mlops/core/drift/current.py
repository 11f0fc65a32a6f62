"""Current data for the drift engine, read in chunks with bounded memory.

Numeric columns keep only their finite values as float64 (about the size of the raw numbers, never
the pandas or CSV overhead of the whole table); categorical columns keep running value counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from airflow_mlops.core.drift.columns import (
    NUMERIC,
    finite_values,
    is_numeric_series,
    value_counts,
)
from airflow_mlops.core.drift.stattests import CategoricalDist, NumericDist

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class CurrentColumn:
    """One current column: its distribution, missing values, and whether its type changed."""

    dist: NumericDist | CategoricalDist
    missing: int = 0
    retyped: bool = False


@dataclass
class CurrentData:
    """Summaries of the current columns that the reference has."""

    columns: dict[str, CurrentColumn]
    n_rows: int
    extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Accumulator:
    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds
        self.parts: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, dict] = {}
        self.missing: dict[str, int] = {}
        self.retyped: set[str] = set()
        self.seen: set[str] = set()
        self.extra: dict[str, None] = {}
        self.mixed: set[str] = set()
        self.n_rows = 0

    def add(self, chunk: pd.DataFrame) -> None:
        self.n_rows += len(chunk)
        for c in chunk.columns:
            if c not in self.kinds:
                self.extra[c] = None
        for name, kind in self.kinds.items():
            if name not in chunk.columns:
                continue
            self.seen.add(name)
            s = chunk[name]
            if kind == NUMERIC:
                if not is_numeric_series(s):
                    if s.isna().all():  # an all-missing chunk reads as object: still numeric
                        self.missing[name] = self.missing.get(name, 0) + len(s)
                        continue
                    self.retyped.add(name)
                    continue
                x, m = finite_values(s)
                self.parts.setdefault(name, []).append(x)
                self.missing[name] = self.missing.get(name, 0) + m
            else:
                counts, m, mixed = value_counts(s)
                if mixed:
                    self.mixed.add(name)
                acc = self.counts.setdefault(name, {})
                for k, v in counts.items():
                    acc[k] = acc.get(k, 0) + v
                self.missing[name] = self.missing.get(name, 0) + m

    def finish(self) -> CurrentData:
        cols: dict[str, CurrentColumn] = {}
        for name in self.seen:
            kind = self.kinds[name]
            if kind == NUMERIC:
                parts = self.parts.pop(name, [])
                if len(parts) == 1:
                    x = np.sort(parts[0])  # a copy: the caller's frame is never changed
                else:
                    x = np.concatenate(parts) if parts else np.zeros(0)
                    x.sort()
                del parts
                dist: NumericDist | CategoricalDist = NumericDist.from_sorted(x)
            else:
                dist = CategoricalDist(self.counts.get(name, {}))
            cols[name] = CurrentColumn(dist, self.missing.get(name, 0), name in self.retyped)
        notes = [
            f"column {c!r} mixes value types in the current data: compared as text"
            for c in sorted(self.mixed)
        ]
        return CurrentData(cols, self.n_rows, list(self.extra), notes)


def summarize_chunks(chunks: Iterable[pd.DataFrame], kinds: dict[str, str]) -> CurrentData:
    """Summarize current data given as chunks of rows.

    :param chunks: DataFrames with the same columns (e.g. from ``iter_table_chunks``).
    :param kinds: ``{column: "numeric" | "categorical"}`` of the reference.
    """
    acc = _Accumulator(kinds)
    for chunk in chunks:
        acc.add(chunk)
    return acc.finish()


def summarize_frame(frame: pd.DataFrame, kinds: dict[str, str]) -> CurrentData:
    """Summarize current data held in one DataFrame."""
    return summarize_chunks([frame], kinds)


def summarize_path(
    path: str | os.PathLike[str], kinds: dict[str, str], chunk_rows: int = 250_000
) -> CurrentData:
    """Summarize a CSV/Parquet file or folder, reading ``chunk_rows`` rows at a time."""
    from airflow_mlops.core.data import iter_table_chunks

    return summarize_chunks(iter_table_chunks(path, chunk_rows=chunk_rows), kinds)


def summarize_prediction_log(
    log_dir: str | os.PathLike[str],
    model_name: str,
    kinds: dict[str, str],
    start: datetime,
    end: datetime,
    chunk_rows: int = 250_000,
) -> CurrentData:
    """Summarize the requests the gateway logged for ``model_name`` in ``[start, end)``."""
    from airflow_mlops.core.prediction_log import iter_window

    return summarize_chunks(iter_window(log_dir, model_name, start, end, chunk_rows=chunk_rows), kinds)
