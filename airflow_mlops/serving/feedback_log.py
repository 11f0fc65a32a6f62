"""Ground-truth log: the labels sent to ``/feedback``, written beside the prediction log so that labelled
production traffic can be joined back to its features (see :func:`airflow_mlops.core.prediction_log.read_labelled`).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_mlops.core.prediction_log import LABEL, REQUEST_ID, ROW, TIMESTAMP, feedback_dir


class FeedbackLogWriter:
    """Buffers feedback events and writes them as Parquet files every ``flush_seconds`` (off the request path).

    :param log_dir: the gateway's ``--log-dir``.
    :param flush_seconds: how often held events are written.
    """

    def __init__(self, log_dir: str | os.PathLike[str], flush_seconds: float = 10.0) -> None:
        self.root = Path(log_dir)
        self.flush_seconds = flush_seconds
        self._held: dict[str, list[tuple[str, int, Any, int]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feedback-log", daemon=True)
        self._thread.start()

    def add(self, model: str, request_id: str, labels: list[Any]) -> None:
        """Hold the true labels of one request (one per predicted row)."""
        ts = time.time_ns() // 1000
        with self._lock:
            self._held.setdefault(model, []).extend((request_id, i, y, ts) for i, y in enumerate(labels))

    def flush(self) -> list[Path]:
        """Write every held event now; return the files written."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            held, self._held = self._held, {}
        files = []
        for model, events in held.items():
            rid, row, label, ts = zip(*events, strict=True)
            table = pa.table(
                {
                    REQUEST_ID: pa.array(rid, pa.string()),
                    ROW: pa.array(row, pa.int32()),
                    LABEL: pa.array([_plain(y) for y in label]),
                    TIMESTAMP: pa.array(ts, pa.timestamp("us", tz="UTC")),
                }
            )
            day = datetime.fromtimestamp(ts[0] / 1e6, tz=timezone.utc).strftime("%Y-%m-%d")
            folder = feedback_dir(self.root, model) / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{ts[0] // 1000}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = path.with_suffix(".tmp")
            pq.write_table(table, tmp)
            tmp.rename(path)  # readers never see a half-written file
            files.append(path)
        return files

    def close(self) -> None:
        """Stop the writer thread and write what is held."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except OSError:
                pass  # a full or read-only disk must not take the gateway down; retried next time


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
