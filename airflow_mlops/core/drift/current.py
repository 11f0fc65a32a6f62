"""Current data for the drift engine: mergeable summaries of bounded size, read in chunks.

A numeric column keeps its finite values exactly while they are few (``exact_limit`` per column, 2^20 by
default: every test is then exact, as on raw data), then a KLL sketch (Apache DataSketches,
``k=2000``: about 6,000 retained values, 48 KB, whatever the row count) whose normalized rank error
(about 0.14% at 99% confidence) is carried to the tests: the KS threshold is widened by it. A numeric
column with at most 1000 distinct values also keeps exact value counts past the limit (chi-square, Z
and the tests on values stay exact). A categorical column keeps exact value counts: memory grows with
its distinct values (about 200 bytes each), and a column with more than ``max_categories`` distinct
current values (1M by default: an identifier, not a category) is refused with a message naming it.

Summaries of parts of the data (chunks, files, partitions on a Dask cluster) merge into the summary
of the whole; while exact, the merge is exact and independent of the order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_mlops.core.drift.columns import (
    NUMERIC,
    finite_values,
    is_numeric_series,
    value_counts,
)
from airflow_mlops.core.drift.stattests import STEP, CategoricalDist, NumericDist
from airflow_mlops.core.errors import MlopsInputError

if TYPE_CHECKING:
    import pandas as pd

#: Finite values per numeric column kept exactly (8 MB) before the column switches to a sketch.
EXACT_LIMIT = 1_048_576
#: The KLL sketch's ``k``: normalized rank error about 1.4e-3 (99% confidence), about 48 KB.
KLL_K = 2000
#: Distinct values of a numeric column counted exactly after the switch (the value tests need them).
MAX_EXACT_VALUES = 1000
#: Quantiles read from a sketch to test against (their own rank error is 1 / (2 x this)).
SKETCH_GRID = 8192
#: Distinct values of a categorical column beyond which it is refused (an identifier, not a category).
MAX_CATEGORIES = 1_000_000


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


class NumericSummary:
    """The finite values of one numeric column: exact while at most ``limit``, then a KLL sketch.

    :param limit: values kept exactly (0: a sketch from the first value).
    """

    def __init__(self, limit: int = EXACT_LIMIT) -> None:
        self.limit = limit
        self.n = 0
        self.parts: list[np.ndarray] | None = []  # None once sketched
        self.sketch: Any = None
        # Exact value counts in sketch mode, while there are few distinct values (None: too many).
        self.counts: dict[float, int] | None = None

    @property
    def exact(self) -> bool:
        """True while every value is kept."""
        return self.parts is not None

    def add(self, x: np.ndarray) -> None:
        """Add finite float64 values (the array is kept, not copied, while exact)."""
        if len(x) == 0:
            return
        self.n += len(x)
        if self.parts is not None:
            self.parts.append(x)
            if self.n > self.limit:
                self._to_sketch()
            return
        _feed(self.sketch, x)
        if self.counts is not None:
            self._count(x)

    def _count(self, x: np.ndarray) -> None:
        counts = self.counts
        if counts is None:
            return
        # A prefix with too many distinct values settles it without sorting the whole chunk (a continuous
        # column: every chunk of a partition that sketches from its first row would be sorted otherwise).
        if len(x) > 4 * MAX_EXACT_VALUES and len(np.unique(x[: 4 * MAX_EXACT_VALUES])) > MAX_EXACT_VALUES:
            self.counts = None
            return
        values, n = np.unique(x, return_counts=True)
        if len(values) > MAX_EXACT_VALUES:
            self.counts = None
            return
        for v, c in zip(values.tolist(), n.tolist(), strict=True):
            counts[v] = counts.get(v, 0) + c
        if len(counts) > MAX_EXACT_VALUES:
            self.counts = None

    def _to_sketch(self) -> None:
        from datasketches import kll_doubles_sketch

        parts, self.parts = self.parts or [], None
        self.sketch = kll_doubles_sketch(KLL_K)
        self.counts = {}
        for x in parts:
            _feed(self.sketch, x)
            self._count(x)

    def merge(self, other: NumericSummary) -> None:
        """Add the values summarized by ``other`` (left unchanged)."""
        if other.parts is not None:
            for x in other.parts:
                self.add(x)
            return
        if self.parts is not None:
            self._to_sketch()
        self.n += other.n
        self.sketch.merge(other.sketch)
        if self.counts is not None and other.counts is not None:
            for v, c in other.counts.items():
                self.counts[v] = self.counts.get(v, 0) + c
            if len(self.counts) > MAX_EXACT_VALUES:
                self.counts = None
        else:
            self.counts = None

    def dist(self) -> NumericDist:
        """The distribution: exact (raw sorted values, or exact value counts) or the sketch's."""
        if self.parts is not None:
            if len(self.parts) == 1:
                x = np.sort(self.parts[0])  # a copy: the caller's frame is never changed
            else:
                x = np.concatenate(self.parts) if self.parts else np.zeros(0)
                x.sort()
            return NumericDist.from_sorted(x)
        if self.counts is not None:
            values = np.array(sorted(self.counts), dtype=np.float64)
            counts = np.array([self.counts[v] for v in values.tolist()], dtype=np.int64)
            mean = float(np.dot(values, counts) / counts.sum())
            std = float(np.sqrt(np.dot((values - mean) ** 2, counts) / counts.sum()))
            return NumericDist.from_counts(values, counts, std)
        ranks = (np.arange(SKETCH_GRID) + 0.5) / SKETCH_GRID
        points = np.asarray(self.sketch.get_quantiles(ranks), dtype=np.float64)
        return NumericDist(
            points=points,
            cdf=np.arange(1, SKETCH_GRID + 1, dtype=np.float64) / SKETCH_GRID,
            n=int(self.sketch.n),
            kind=STEP,
            std_=float(np.std(points)),
            n_unique=MAX_EXACT_VALUES + 1,
            rank_error=float(self.sketch.normalized_rank_error(False)) + 1.0 / SKETCH_GRID,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.sketch is not None:
            state["sketch"] = self.sketch.serialize()  # the sketch itself does not pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("sketch") is not None:
            from datasketches import kll_doubles_sketch

            state["sketch"] = kll_doubles_sketch.deserialize(state["sketch"])
        self.__dict__.update(state)


def _feed(sketch: Any, x: np.ndarray) -> None:
    """Update a sketch with an array (it takes only writable, contiguous float64: Arrow-backed columns
    are read-only views)."""
    if not (x.flags.writeable and x.flags.c_contiguous and x.dtype == np.float64):
        x = np.array(x, dtype=np.float64)
    sketch.update(x)


class TableSummary:
    """Mergeable summaries of the current columns that the reference has (by their reference kind).

    :param kinds: ``{column: "numeric" | "categorical"}`` of the reference.
    :param exact_limit: values per numeric column kept exactly before sketching.
    :param max_categories: distinct values per categorical column before it is refused.
    """

    def __init__(
        self, kinds: dict[str, str], exact_limit: int = EXACT_LIMIT, max_categories: int = MAX_CATEGORIES
    ) -> None:
        self.kinds = kinds
        self.exact_limit = exact_limit
        self.max_categories = max_categories
        self.numeric: dict[str, NumericSummary] = {}
        self.counts: dict[str, dict[Any, int]] = {}
        self.missing: dict[str, int] = {}
        self.retyped: set[str] = set()
        self.seen: dict[str, None] = {}
        self.extra: dict[str, None] = {}
        self.mixed: set[str] = set()
        self.n_rows = 0

    def add(self, chunk: pd.DataFrame) -> None:
        """Add a chunk of rows."""
        self.n_rows += len(chunk)
        for c in chunk.columns:
            if c not in self.kinds:
                self.extra[c] = None
        for name, kind in self.kinds.items():
            if name not in chunk.columns:
                continue
            self.seen[name] = None
            s = chunk[name]
            if kind == NUMERIC:
                if not is_numeric_series(s):
                    if s.isna().all():  # an all-missing chunk reads as object: still numeric
                        self.missing[name] = self.missing.get(name, 0) + len(s)
                        continue
                    self.retyped.add(name)
                    continue
                x, m = finite_values(s)
                self._numeric(name).add(x)
                self.missing[name] = self.missing.get(name, 0) + m
            else:
                counts, m, mixed = value_counts(s)
                if mixed:
                    self.mixed.add(name)
                self._add_counts(name, counts)
                self.missing[name] = self.missing.get(name, 0) + m

    def _numeric(self, name: str) -> NumericSummary:
        summary = self.numeric.get(name)
        if summary is None:
            summary = self.numeric[name] = NumericSummary(self.exact_limit)
        return summary

    def _add_counts(self, name: str, counts: dict[Any, int]) -> None:
        acc = self.counts.setdefault(name, {})
        for k, v in counts.items():
            acc[k] = acc.get(k, 0) + v
        if len(acc) > self.max_categories:
            raise MlopsInputError(
                f"Column {name!r} has more than {self.max_categories:,} distinct values in the current data: "
                "it looks like an identifier, not a category. Drop it from `columns` (or from the "
                "reference), or bucket it before the drift check."
            )

    def merge(self, other: TableSummary) -> TableSummary:
        """Add the rows summarized by ``other`` (left unchanged); returns self."""
        self.n_rows += other.n_rows
        for name, summary in other.numeric.items():
            self._numeric(name).merge(summary)
        for name, counts in other.counts.items():
            self._add_counts(name, counts)
        for name, m in other.missing.items():
            self.missing[name] = self.missing.get(name, 0) + m
        self.retyped |= other.retyped
        self.mixed |= other.mixed
        self.seen.update(other.seen)
        self.extra.update(other.extra)
        return self

    def finish(self) -> CurrentData:
        """The summaries the engine tests (numeric values are sorted here, once)."""
        cols: dict[str, CurrentColumn] = {}
        for name in self.seen:
            if self.kinds[name] == NUMERIC:
                summary = self.numeric.pop(name, None)
                dist: NumericDist | CategoricalDist = (
                    summary.dist() if summary is not None else NumericDist.from_sorted(np.zeros(0))
                )
                del summary
            else:
                dist = CategoricalDist(self.counts.get(name, {}))
            cols[name] = CurrentColumn(dist, self.missing.get(name, 0), name in self.retyped)
        notes = [
            f"column {c!r} mixes value types in the current data: compared as text"
            for c in sorted(self.mixed)
        ]
        return CurrentData(cols, self.n_rows, list(self.extra), notes)


def summarize_chunks(
    chunks: Iterable[pd.DataFrame], kinds: dict[str, str], exact_limit: int = EXACT_LIMIT
) -> CurrentData:
    """Summarize current data given as chunks of rows.

    :param chunks: DataFrames with the same columns (e.g. from ``iter_table_chunks``).
    :param kinds: ``{column: "numeric" | "categorical"}`` of the reference.
    :param exact_limit: values per numeric column kept exactly before sketching.
    """
    return table_summary(chunks, kinds, exact_limit).finish()


def table_summary(
    chunks: Iterable[pd.DataFrame], kinds: dict[str, str], exact_limit: int = EXACT_LIMIT
) -> TableSummary:
    """The (mergeable) summary of chunks of rows."""
    acc = TableSummary(kinds, exact_limit)
    for chunk in chunks:
        acc.add(chunk)
    return acc


def summarize_frame(frame: pd.DataFrame, kinds: dict[str, str]) -> CurrentData:
    """Summarize current data held in one DataFrame."""
    return summarize_chunks([frame], kinds)


def summarize_path(
    path: str | os.PathLike[str],
    kinds: dict[str, str],
    chunk_rows: int = 250_000,
    exact_limit: int = EXACT_LIMIT,
) -> CurrentData:
    """Summarize a CSV/Parquet file or folder, reading ``chunk_rows`` rows at a time (Parquet in
    record batches through pyarrow)."""
    from airflow_mlops.core.data import iter_table_chunks

    return summarize_chunks(iter_table_chunks(path, chunk_rows=chunk_rows), kinds, exact_limit)


def summarize_prediction_log(
    log_dir: str | os.PathLike[str],
    model_name: str,
    kinds: dict[str, str],
    start: datetime,
    end: datetime,
    chunk_rows: int = 250_000,
    exact_limit: int = EXACT_LIMIT,
) -> CurrentData:
    """Summarize the requests the gateway logged for ``model_name`` in ``[start, end)``."""
    from airflow_mlops.core.prediction_log import iter_window

    chunks = iter_window(log_dir, model_name, start, end, chunk_rows=chunk_rows)
    return summarize_chunks(chunks, kinds, exact_limit)
