"""Ground-truth log: the labels sent to ``/feedback``, written beside the prediction log so that labelled
production traffic can be joined back to its features (see :func:`airflow_mlops.core.prediction_log.read_labelled`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_mlops.core.prediction_log import LABEL, REQUEST_ID, ROW, TIMESTAMP, feedback_dir

log = logging.getLogger(__name__)

# (model, request id, row, label, timestamp in microseconds)
_Event = tuple[str, str, int, Any, int]


class FeedbackLogWriter:
    """Buffers feedback events and writes them as Parquet files every ``flush_seconds`` (off the request path).

    A failed write keeps its events and is retried at the next flush; at most ``max_held_rows`` events
    are held (beyond it the oldest are dropped), and drops and failed writes are reported through
    ``on_drop`` / ``on_error``. The writer thread outlives any error.

    :param log_dir: the gateway's ``--log-dir``.
    :param flush_seconds: how often held events are written (and a failed write retried).
    :param max_held_rows: labelled rows held at most while writes fail.
    :param on_drop: called with the number of rows dropped.
    :param on_error: called once per failed write.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        flush_seconds: float = 10.0,
        max_held_rows: int = 1_000_000,
        on_drop: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.root = Path(log_dir)
        self.flush_seconds = flush_seconds
        self.max_held_rows = max_held_rows
        self.on_drop = on_drop
        self.on_error = on_error
        self.rows_written = 0
        self.rows_dropped = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._held: deque[_Event] = deque()
        self._closed = False
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feedback-log", daemon=True)
        self._thread.start()

    @property
    def held_rows(self) -> int:
        """Labelled rows in memory, not yet in a file."""
        return len(self._held)

    def add(self, model: str, request_id: str, labels: list[Any]) -> None:
        """Hold the true labels of one request (one per predicted row)."""
        ts = time.time_ns() // 1000
        with self._lock:
            if self._closed:
                dropped = len(labels)
            else:
                self._held.extend((model, request_id, i, y, ts) for i, y in enumerate(labels))
                dropped = self._trim()
        if dropped:
            self._dropped(dropped)

    def _trim(self) -> int:
        """Drop the oldest events beyond the bound (under the lock); return how many went."""
        excess = len(self._held) - self.max_held_rows
        for _ in range(max(0, excess)):
            self._held.popleft()
        return max(0, excess)

    def _dropped(self, n: int) -> None:
        self.rows_dropped += n
        if self.on_drop is not None:
            self.on_drop(n)

    def flush(self) -> list[Path]:
        """Write every held event now; return the files written (events that failed stay held)."""
        with self._write_lock:
            with self._lock:
                taken = list(self._held)
                self._held.clear()
            by_model: dict[str, list[_Event]] = {}
            for event in taken:
                by_model.setdefault(event[0], []).append(event)
            files: list[Path] = []
            failed: list[_Event] = []
            for model, events in by_model.items():
                try:
                    files.append(self._write(model, events))
                except Exception as e:  # noqa: BLE001 - kept and retried: a full disk must not lose labels
                    failed.extend(events)
                    self._error(e)
            if failed:
                with self._lock:
                    self._held.extendleft(reversed(failed))  # still the oldest
                    dropped = self._trim()
                if dropped:
                    self._dropped(dropped)
            return files

    def _write(self, model: str, events: list[_Event]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        _, rid, row, label, ts = zip(*events, strict=True)
        table = pa.table(
            {
                REQUEST_ID: pa.array(rid, pa.string()),
                ROW: pa.array(row, pa.int32()),
                LABEL: _labels(label),
                TIMESTAMP: pa.array(ts, pa.timestamp("us", tz="UTC")),
            }
        )
        day = datetime.fromtimestamp(ts[0] / 1e6, tz=timezone.utc).strftime("%Y-%m-%d")
        folder = feedback_dir(self.root, model) / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{ts[0] // 1000}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = path.with_suffix(".tmp")
        try:
            pq.write_table(table, tmp)
            tmp.rename(path)  # readers never see a half-written file
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.rows_written += len(events)
        self.last_error = None
        return path

    def _error(self, e: BaseException) -> None:
        self.write_errors += 1
        if self.on_error is not None:
            self.on_error()
        message = f"{type(e).__name__}: {e}"
        if message != self.last_error:  # once per kind of failure, not once per retry
            log.error(
                "Writing the feedback log under %s failed (%s): labels are kept and retried",
                self.root,
                message,
            )
        self.last_error = message

    def close(self) -> None:
        """Stop the writer thread and write what is held (what cannot be written is counted as dropped)."""
        with self._lock:
            self._closed = True
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()
        with self._lock:
            lost = len(self._held)
            self._held.clear()
        if lost:
            log.error("%d feedback rows could not be written under %s before shutdown", lost, self.root)
            self._dropped(lost)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # the writer must outlive any error; it is in the gateway log
                log.exception("The feedback log writer under %s failed", self.root)


def _labels(values: tuple[Any, ...]) -> Any:
    """The label column; labels of mixed types become text rather than failing the file forever."""
    import pyarrow as pa

    plain = [_plain(y) for y in values]
    try:
        return pa.array(plain)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in plain], pa.string())


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
