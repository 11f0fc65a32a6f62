"""The prediction log writer: buffers rows in memory and writes rolling Parquet files in a thread.

The request path only appends references to a list; a background thread writes a file every
``flush_seconds`` or ``flush_rows`` rows, and :meth:`PredictionLogWriter.close` writes what is left.
Layout and column names: :mod:`airflow_mlops.core.prediction_log`. Files appear atomically (written
under a temporary name, then renamed), so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import prediction_log as contract

if TYPE_CHECKING:
    import numpy as np

    from airflow_mlops.serving.models import Batch

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    model: str
    version: str
    request_id: str
    ts_us: int
    batch: Batch
    predictions: np.ndarray

    @property
    def n_rows(self) -> int:
        return self.batch.n_rows


class PredictionLogWriter:
    """Rolling Parquet writer for one gateway.

    Every ``compact_seconds`` the thread turns the requests queued since into one Arrow table (small
    steps, so it never holds the interpreter long enough to stall requests); every ``flush_seconds``,
    or once ``flush_rows`` rows are held, it writes those tables as one file per model and day.

    A failed write (a full or read-only disk, a missing folder) keeps its rows and is retried every
    ``flush_seconds``; the rows held stay under ``max_pending_rows``: beyond it the oldest are dropped,
    and every drop and failed write is reported through ``on_drop`` / ``on_error`` (the gateway counts
    them on ``/metrics``). The writer thread outlives any error.

    :param log_dir: root folder of the log.
    :param flush_seconds: write a file at least this often while rows come in (and retry a failed write).
    :param flush_rows: write a file as soon as this many rows are held.
    :param max_pending_rows: rows held at most (queued and unwritten); beyond it the oldest are dropped.
    :param on_drop: called with the number of rows dropped.
    :param on_error: called once per failed write.
    :param compact_seconds: how often queued requests become Arrow tables.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        flush_seconds: float = 10.0,
        flush_rows: int = 50_000,
        max_pending_rows: int = 1_000_000,
        on_drop: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
        compact_seconds: float = 0.2,
    ) -> None:
        self.root = Path(log_dir)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # written later, once the disk allows it
            log.error("Cannot create the prediction log folder %s (%s): writes will be retried", self.root, e)
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.max_pending_rows = max_pending_rows
        self.on_drop = on_drop
        self.on_error = on_error
        self.compact_seconds = min(compact_seconds, flush_seconds)
        self.files_written = 0
        self.rows_written = 0
        self.rows_dropped = 0
        self.write_errors = 0
        self.last_error: str | None = None
        # Oldest first: compacted tables not yet written, then requests not yet compacted.
        self._tables: deque[tuple[tuple[str, str], Any]] = deque()
        self._pending: deque[_Entry] = deque()
        self._held_rows = 0  # rows in both, plus tables being written right now
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._failing = False
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def held_rows(self) -> int:
        """Rows in memory, not yet in a file."""
        return self._held_rows

    def add(self, model: str, version: str, request_id: str, batch: Batch, predictions: np.ndarray) -> None:
        """Queue the rows of one request (cheap: no copy, no I/O).

        :param model: model name.
        :param version: the version that answered.
        :param request_id: the request id.
        :param batch: the validated input rows.
        :param predictions: the predictions, one per row.
        """
        n_rows = batch.n_rows
        entry = _Entry(model, version, request_id, time.time_ns() // 1000, batch, predictions)
        dropped = 0
        with self._lock:
            if self._closed or n_rows > self.max_pending_rows:
                dropped = n_rows
            else:
                # Make room by dropping the oldest rows held (whole tables or requests).
                while self._held_rows + n_rows > self.max_pending_rows and (self._tables or self._pending):
                    need = self._held_rows + n_rows - self.max_pending_rows
                    if self._tables:
                        key, table = self._tables[0]
                        if table.num_rows > need:  # the oldest rows of the oldest table (zero-copy)
                            self._tables[0] = (key, table.slice(need))
                            gone = need
                        else:
                            gone = self._tables.popleft()[1].num_rows
                    else:
                        gone = self._pending.popleft().n_rows
                    self._held_rows -= gone
                    dropped += gone
                if self._held_rows + n_rows > self.max_pending_rows:
                    dropped += n_rows  # the rest is being written right now: this request waits for none
                else:
                    self._pending.append(entry)
                    self._held_rows += n_rows
            full = self._held_rows >= self.flush_rows and not self._failing
        if dropped:
            self._dropped(dropped)
        if full:
            self._wake.set()

    def _dropped(self, n: int) -> None:
        self.rows_dropped += n
        if self.on_drop is not None:
            self.on_drop(n)

    def _run(self) -> None:
        last_write = time.monotonic()
        while not self._closed:
            self._wake.wait(self.compact_seconds)
            self._wake.clear()
            try:
                with self._write_lock:
                    self._compact()
                    due = time.monotonic() - last_write >= self.flush_seconds
                    full = self._held_rows >= self.flush_rows and not self._failing
                    if self._tables and (due or full):
                        self._write_tables()
                        last_write = time.monotonic()
            except Exception:  # the writer must outlive any error; it is in the gateway log
                log.exception("The prediction log writer under %s failed", self.root)

    def flush(self) -> list[Path]:
        """Write every held row now; return the files written (rows that failed stay held)."""
        with self._write_lock:
            self._compact()
            return self._write_tables()

    def _compact(self) -> None:
        with self._lock:
            entries = list(self._pending)
            self._pending.clear()
        groups: dict[tuple[str, str], list[_Entry]] = {}
        for e in entries:
            day = datetime.fromtimestamp(e.ts_us / 1e6, tz=timezone.utc).strftime("%Y-%m-%d")
            groups.setdefault((e.model, day), []).append(e)
        tables = []
        for key, group in groups.items():
            try:
                tables.append((key, _table(group)))
                continue
            except Exception:  # noqa: BLE001 - find the request at fault, keep the others
                pass
            for en in group:
                try:
                    tables.append((key, _table([en])))
                except Exception as e:  # noqa: BLE001 - rows that cannot become a table never will
                    with self._lock:
                        self._held_rows -= en.n_rows
                    self._error(e, "rows that cannot become a table are dropped")
                    self._dropped(en.n_rows)
        with self._lock:
            self._tables.extend(tables)

    def _write_tables(self) -> list[Path]:
        import pyarrow as pa

        with self._lock:
            taken = list(self._tables)
            self._tables.clear()
        by_key: dict[tuple[str, str], list[Any]] = {}
        for key, table in taken:
            by_key.setdefault(key, []).append(table)
        paths: list[Path] = []
        failed: list[tuple[tuple[str, str], Any]] = []
        for (model, day), parts in by_key.items():
            try:
                merged = [pa.concat_tables(parts, promote_options="default")]
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                merged = parts  # a column changed type between versions: one file per part
            for table in merged:
                try:
                    paths.append(self._write(model, day, table))
                except Exception as e:  # noqa: BLE001 - kept and retried: a full disk must not lose rows
                    failed.append(((model, day), table))
                    self._error(e)
                    continue
                with self._lock:
                    self._held_rows -= table.num_rows
        with self._lock:
            self._tables.extendleft(reversed(failed))  # still the oldest
            self._failing = bool(failed)
        return paths

    def _error(self, e: BaseException, outcome: str = "rows are kept and retried") -> None:
        self.write_errors += 1
        if self.on_error is not None:
            self.on_error()
        message = f"{type(e).__name__}: {e}"
        if message != self.last_error:  # once per kind of failure, not once per retry
            log.error("Writing the prediction log under %s failed (%s): %s", self.root, message, outcome)
        self.last_error = message

    def _write(self, model: str, day: str, table: Any) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = self.root / model / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{name}.tmp"
        # Dictionary encoding pays off for repeated text (ids, versions, categories) but costs five
        # times the write time on unique floats, which it then drops anyway.
        text = [
            f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]
        try:
            pq.write_table(table, tmp, use_dictionary=text)
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no half file left behind on a full disk
            raise
        self.files_written += 1
        self.rows_written += table.num_rows
        self.last_error = None
        return folder / name

    def close(self) -> None:
        """Stop the writer thread and write what is held (what cannot be written is counted as dropped)."""
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
        with self._lock:
            lost, self._held_rows = self._held_rows, 0
            self._tables.clear()
            self._pending.clear()
        if lost:
            log.error("%d prediction-log rows could not be written under %s before shutdown", lost, self.root)
            self._dropped(lost)


def _table(entries: list[_Entry]) -> Any:
    """One Arrow table of the rows of ``entries`` (features, then the meta columns)."""
    import numpy as np
    import pyarrow as pa

    data: dict[str, Any] = {}
    first = entries[0].batch
    if first.matrix is not None and all(
        e.batch.matrix is not None and e.batch.names == first.names for e in entries
    ):
        # The common case: one model's numeric rows, stacked in one call.
        stacked = np.vstack([e.batch.matrix for e in entries if e.batch.matrix is not None])
        for j, c in enumerate(first.names):
            data[c] = pa.array(stacked[:, j])
    else:
        names: list[str] = []
        for e in entries:
            for c in e.batch.names:
                if c not in names:
                    names.append(c)
        for c in names:
            parts = []
            for e in entries:
                col = e.batch.columns.get(c)
                parts.append(col if col is not None else np.full(e.n_rows, None, dtype=object))
            data[c] = _array(np.concatenate(parts) if len(parts) > 1 else parts[0])
    counts = [e.n_rows for e in entries]
    data[contract.PREDICTION] = _array(np.concatenate([np.asarray(e.predictions) for e in entries]))
    # One value per request, spread over its rows by index: no Python string per row.
    owner = pa.array(np.repeat(np.arange(len(entries)), counts))
    data[contract.MODEL_NAME] = pa.array([e.model for e in entries], pa.string()).take(owner)
    data[contract.MODEL_VERSION] = pa.array([e.version for e in entries], pa.string()).take(owner)
    data[contract.REQUEST_ID] = pa.array([e.request_id for e in entries], pa.string()).take(owner)
    data[contract.TIMESTAMP] = pa.array(
        np.repeat(np.array([e.ts_us for e in entries], dtype=np.int64), counts),
        type=pa.timestamp("us", tz="UTC"),
    )
    return pa.table(data)


def _array(values: np.ndarray) -> Any:
    """A pyarrow array; object columns of mixed types fall back to text rather than failing the file."""
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
