"""The gateway's shadow scoring: copies of live requests scored off the request path."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.serving.live_metrics import LiveMetrics

if TYPE_CHECKING:
    import numpy as np

    from airflow_mlops.serving.models import Batch, LoadedModel

log = logging.getLogger("airflow_mlops.serving")


class ShadowWorker:
    """Scores shadow copies in a thread, in micro-batches: every ``interval`` seconds it takes what
    queued up and scores it with one predict call per version.

    The request path only appends to a deque (no lock, no wake-up), and one predict of many rows
    costs about as much as one of a single row, so shadow mode stays cheap under load.

    :param metrics: where shadow counts go.
    :param maxsize: copies waiting at most; more are dropped and counted.
    :param interval: seconds between micro-batches.
    """

    def __init__(self, metrics: LiveMetrics, maxsize: int, interval: float = 0.1) -> None:
        self.metrics = metrics
        self.maxsize = maxsize
        self.interval = interval
        self.processed = 0
        self._items: deque[tuple[LoadedModel, Any, np.ndarray]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def submit(
        self, model: LoadedModel, records: list[dict[str, Any]], batch: Batch, champion_preds: np.ndarray
    ) -> None:
        """Queue a copy for ``model``; drop it (counted) when the queue is full.

        :param model: the shadow version.
        :param records: the request's records.
        :param batch: the champion's validated input, reused when the shadow takes the same columns.
        :param champion_preds: what the champion answered.
        """
        if len(self._items) >= self.maxsize:
            self.metrics.shadow_dropped.labels(model.name, model.version).inc()
            return
        same_input = (
            batch.matrix is not None and model.uses_matrix_path and batch.names == model.feature_names
        )
        self._items.append((model, batch if same_input else records, champion_preds))

    @property
    def pending(self) -> int:
        """Copies waiting to be scored."""
        return len(self._items)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        items = []
        pop = self._items.popleft
        while True:
            try:
                items.append(pop())
            except IndexError:
                break
        if items:
            self._score(items)

    def _score(self, items: list[tuple[LoadedModel, Any, np.ndarray]]) -> None:
        by_model: dict[int, list[tuple[LoadedModel, Any, np.ndarray]]] = {}
        for it in items:
            by_model.setdefault(id(it[0]), []).append(it)
        for group in by_model.values():
            model = group[0][0]
            try:
                agree = self._agreement(model, group)
            except MlopsInputError:
                # Some inputs do not fit the shadow's signature: score one by one, misfits disagree.
                agree = 0
                for item in group:
                    try:
                        agree += self._agreement(model, [item])
                    except MlopsInputError:
                        pass
            except Exception:  # a broken shadow must never hurt the champion's traffic
                log.exception("Shadow version %s/%s failed to predict", model.name, model.version)
                agree = 0
            self.metrics.shadow_requests.labels(model.name, model.version).inc(len(group))
            if agree:
                self.metrics.shadow_agreement.labels(model.name, model.version).inc(agree)
            self.processed += len(group)

    @staticmethod
    def _agreement(model: LoadedModel, group: list[tuple[LoadedModel, Any, np.ndarray]]) -> int:
        """Predict the group's rows in one call per input kind; count requests whose predictions all match."""
        import numpy as np

        from airflow_mlops.serving.models import Batch

        agree = 0
        matrices = [it for it in group if isinstance(it[1], Batch)]
        records = [it for it in group if not isinstance(it[1], Batch)]
        for part in (matrices, records):
            if not part:
                continue
            if part is matrices:
                stacked = np.vstack([b.matrix for _, b, _ in part])
                preds, _ = model.predict(Batch(part[0][1].names, len(stacked), matrix=stacked))
                sizes = [b.n_rows for _, b, _ in part]
            else:
                preds, _ = model.predict(model.batch([r for _, recs, _ in part for r in recs]))
                sizes = [len(recs) for _, recs, _ in part]
            # Row-wise equality, then one AND per request over its rows, all vectorised.
            equal = np.asarray(preds == np.concatenate([champ for _, _, champ in part]), dtype=bool)
            starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
            agree += int(np.logical_and.reduceat(equal, starts).sum())
        return agree

    def close(self) -> None:
        """Score what is queued, then stop."""
        self._stop.set()
        self._thread.join(timeout=30)
